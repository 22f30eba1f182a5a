package kf

import (
	"context"
	"encoding/json"
)

// BatchGetRequest is the body of kf/customer/batchget (at most 100 ids).
type BatchGetRequest struct {
	ExternalUserIDs         []string `json:"external_userid_list"`
	NeedEnterSessionContext int      `json:"need_enter_session_context,omitempty"`
}

// BatchGetResponse lists the customers WeCom knows and the ids it does not.
type BatchGetResponse struct {
	status
	Customers []Customer `json:"customer_list"`
	Invalid   []string   `json:"invalid_external_userid"`
}

// Customer is a WeChat customer as kf/customer/batchget describes them.
type Customer struct {
	ExternalUserID string `json:"external_userid"`
	Nickname       string `json:"nickname"`
	Avatar         string `json:"avatar"`
	Gender         int    `json:"gender"`
	UnionID        string `json:"unionid,omitempty"`
	// EnterSessionContext is kept as WeCom sends it (scene, scene_param,
	// wechat_channels): nothing here reads it.
	EnterSessionContext json.RawMessage `json:"enter_session_context,omitempty"`
}

// BatchGetCustomers looks customers up (nickname, avatar).
func (c *Client) BatchGetCustomers(ctx context.Context, token string, req BatchGetRequest) (BatchGetResponse, error) {
	return callAPI[BatchGetResponse](ctx, c, token, "kf/customer/batchget", req)
}
