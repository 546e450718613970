"""The HTTP headers the API defines (besides `Authorization`)."""

REQUEST_ID_HEADER = "X-Request-ID"  # honoured or generated, echoed on every answer
IDEMPOTENCY_HEADER = "Idempotency-Key"  # a write sent again with it is done once
REPLAYED_HEADER = "Idempotent-Replayed"  # `true` on an answer replayed for such a key
REASON_HEADER = "X-Correction-Reason"  # why a correction is made (or the body's `reason`)
