"""Billing: a payment provider's webhook events (Stripe) turned into plan tiers and payment
states. Pure policy over data (events.py, policy.py); the storage, the webhook handler and the
suspension job that act on it are in storage/billing.py, gateway/billing_webhook.py and
app/billing.py."""
