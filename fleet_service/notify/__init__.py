"""Alert notifications: channels, the durable outbox fed from `alert_event`, delivery with retries."""
