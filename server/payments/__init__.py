"""Payment links: PayPal (Orders v2) and Tranzila, behind one stable link per payment.

`service` creates payments (the ordered 401/404/501/403/501/400 checks), `links` serves the
customer's `/pay/<token>` pages, `notifications` applies what the providers report, `states` is the
forward-only state machine, `accounts` resolves whose credentials to use, `money` converts amounts.
"""
