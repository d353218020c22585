"""The steward's console: server-rendered pages served by the sharing gateway's application
under /console (review queue, quarantine, releases ledger, catalog), for people who sign in
with a local account and a role (accounts.py). The data behind each page is read by
views.py, which knows nothing of the web; web.py renders it."""
