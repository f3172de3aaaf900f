package failure

// Reasons that more than one stage gives. They live here, beside the Failure
// that carries them, so that merge, the sinks, Retry and the dead-letter
// archive spell each code once: operators filter on these strings, and two
// copies could drift apart.
const (
	// ReasonWrongEnv: the message's `env` attribute named another
	// environment.
	ReasonWrongEnv = "wrong_env"
	// ReasonInternal: a bug, such as a recovered panic; retried, since the
	// input may not be at fault.
	ReasonInternal = "internal_error"
	// ReasonStoreUnavailable: the event store could not be reached. The
	// message is nacked rather than parked, since every other message would
	// fail the same way until the store is back.
	ReasonStoreUnavailable = "store_unavailable"
	// ReasonStoreError: the store answered with an error nobody classified;
	// retried by default.
	ReasonStoreError = "store_error"
)
