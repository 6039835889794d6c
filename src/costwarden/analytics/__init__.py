"""Analytics: where the money goes, by every dimension, from rollups equal to the ledger."""
