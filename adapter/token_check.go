package adapter

import (
	"context"
	"time"
)

// CheckToken asks WeCom once for an access token of app b, as the token
// manager would, and throws the token away: `wecombot check -online`
// uses it to learn whether corp_id and secret are accepted (and the
// server's IP trusted) before the service goes live. Nothing is stored,
// logged or counted, and no backoff is set. The error is an *APIError or
// *HTTPError as for the service (Hint says what to do), with no secret in
// it.
func CheckToken(ctx context.Context, w WeComConfig, b BotConfig) error {
	api := newAPIClient(w.APIBase, time.Duration(w.RequestTimeout))
	_, _, err := api.getToken(ctx, b.CorpID, b.Secret)
	return err
}
