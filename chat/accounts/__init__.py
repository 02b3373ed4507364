"""Accounts: passwords and e-mailed codes (R19), children associated by their
parents (R20), sessions people see and end (R21).

- :mod:`chat.accounts.service`: the sign-up, sign-in, password and session steps
- :mod:`chat.accounts.children`: associating a child, issuing NIPs
- :mod:`chat.accounts.codes`, :mod:`chat.accounts.sessions`: the rows behind them
- :mod:`chat.accounts.hashing`, :mod:`chat.accounts.throttle`, :mod:`chat.accounts.mails`
"""
