package kf

import (
	"context"
	"fmt"
)

// Service states of a conversation (kf/service_state/get, KF.md §7).
const (
	StateNew       = 0 // the customer wrote; nobody has answered
	StateAssistant = 1 // the API (this service) answers
	StateQueue     = 2 // waiting for a receptionist
	StateHuman     = 3 // a receptionist has it
	StateEnded     = 4 // ended, or never started
)

type serviceStateResponse struct {
	status
	ServiceState *int `json:"service_state"`
}

// ServiceState is the state of the conversation of customer on account:
// in states StateNew and StateAssistant the API may answer; in the others
// a send fails with 95018.
func (c *Client) ServiceState(ctx context.Context, token, account, customer string) (int, error) {
	const api = "kf/service_state/get"
	r, err := callAPI[serviceStateResponse](ctx, c, token, api, map[string]string{"open_kfid": account, "external_userid": customer})
	if err != nil {
		return 0, err
	}
	if r.ServiceState == nil {
		return 0, fmt.Errorf("%w: %s: no service_state", ErrMalformed, api)
	}
	return *r.ServiceState, nil
}
