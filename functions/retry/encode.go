package retryfunc

import (
	"encoding/json"
	"fmt"

	"github.com/backbone-sync/backbone/shared/event"
)

func encode(e event.Error) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode error message: %w", err)
	}
	return b, nil
}
