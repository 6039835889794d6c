"""Budgets and rate limits: limits (vocabulary), windows, policy (the decision), counter
stores (in-process and Redis), rebuild from the ledger, and the enforcer the gateway calls."""
