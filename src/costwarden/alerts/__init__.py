"""Alerts: rules that fire once per (rule, scope, window, threshold), their state, and their
delivery to webhooks, Slack and e-mail. Policy is plain functions over data; I/O at the edges."""
