"""The security engine: prompt scanning (injection, secrets, personal data), tool pinning and
the skill-bundle scanner. Policy and detection are functions over data here; the gateway's
scan stage, storage and the CLI do the I/O."""
