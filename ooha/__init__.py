"""The stack's machinery: layer table, contract, settings, preflight, report; layers/ and ops/ below."""
