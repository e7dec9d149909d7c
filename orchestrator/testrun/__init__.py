"""`orchestrator test`: find each module's tests, run them in one pytest session, report per module."""
