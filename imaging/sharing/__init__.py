"""Cross-site sharing: peers, policies, consent, durable outbox and delivery, share links."""
