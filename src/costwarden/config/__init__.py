"""Configuration: the TOML file and the environment, mapped into typed settings."""
