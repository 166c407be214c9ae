"""Privacy by design: erasure, opt-out by face, consent, retention and subject access."""
