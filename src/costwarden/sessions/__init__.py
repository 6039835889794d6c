"""Agent sessions: a run's budget, its wind-down, sleep and wake, loop detection and the
escalations a human resolves. Policy as data here (``lifecycle``, ``loops``); storage and the
request path do the I/O."""
