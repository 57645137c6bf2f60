"""What the copier tells the world: the metrics catalogue, logs with tokens redacted, alerts and
their channels. Every layer may import it; it imports none of them."""
