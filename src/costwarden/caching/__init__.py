"""The exact-match response cache: cache keys (keys), when to read and write it (policy), the
stored entry (entry), a stream's answer assembled whole (assemble) and replayed as a stream
(replay), and the two stores, in-process and Redis (stores). Pure functions over data; I/O
only in the stores."""
