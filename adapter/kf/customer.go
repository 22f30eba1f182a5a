package kf

import (
	"context"
	"encoding/json"
	"fmt"
)

// BatchGetRequest is the body of kf/customer/batchget (at most 100 ids).
type BatchGetRequest struct {
	ExternalUserIDs         []string `json:"external_userid_list"`
	NeedEnterSessionContext int      `json:"need_enter_session_context,omitempty"`
}

// BatchGetResponse lists the customers WeCom knows and the ids it does not.
type BatchGetResponse struct {
	ErrCode   int        `json:"errcode"`
	ErrMsg    string     `json:"errmsg"`
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
	const api = "kf/customer/batchget"
	data, err := c.post(ctx, token, api, req)
	if err != nil {
		return BatchGetResponse{}, err
	}
	var r BatchGetResponse
	if err := json.Unmarshal(data, &r); err != nil {
		return BatchGetResponse{}, fmt.Errorf("%w: %s: %v", ErrMalformed, api, err)
	}
	if r.ErrCode != 0 {
		return BatchGetResponse{}, &Error{API: api, Code: r.ErrCode, Msg: r.ErrMsg}
	}
	return r, nil
}
