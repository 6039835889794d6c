"""The core layer, which every other may use: errors, money, records, events, polling."""
