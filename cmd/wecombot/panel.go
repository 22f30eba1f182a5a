package main

import (
	"bytes"
	"fmt"
	"net/url"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/wecombot/wecombot/llm"
	"github.com/wecombot/wecombot/web"
)

// masked replaces every secret the admin panel shows the configuration of.
const masked = "******"

// secretKey says whether a configuration key holds a secret: the app secret,
// the callback token and AES key, the LLM key, the admin password.
func secretKey(k string) bool {
	switch k {
	case "secret", "token", "encoding_aes_key", "api_key", "password":
		return true
	}
	return false
}

// panelConfig is the admin panel's configuration page: cfg with every
// secret masked, and what `wecombot check` says of it. With echo (the demo
// without a model key), the service answers with llm.Echo: the llm section
// is shown as that model runs, which calls no API with no key.
func panelConfig(cfg *Config, echo bool) web.ConfigReport {
	r := web.ConfigReport{EchoModel: echo, Models: botModelRows(cfg, echo)}
	shown := cfg
	if echo {
		c := *cfg
		c.LLM.Model, c.LLM.BaseURL, c.LLM.APIKey = llm.EchoModel, "", ""
		shown = &c
	}
	text, err := maskedConfig(shown)
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
	}
	r.Text = text
	for _, e := range cfg.validate() {
		r.Problems = append(r.Problems, e.Error())
	}
	return r
}

// maskedConfig renders cfg as YAML, every value of a secret key (at any
// depth) replaced by masked, and so is a password inside a URL.
func maskedConfig(cfg *Config) (string, error) {
	var doc yaml.Node
	if err := doc.Encode(cfg); err != nil {
		return "", fmt.Errorf("config: render: %w", err)
	}
	mask(&doc)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return "", fmt.Errorf("config: render: %w", err)
	}
	if err := enc.Close(); err != nil {
		return "", fmt.Errorf("config: render: %w", err)
	}
	return b.String(), nil
}

func mask(n *yaml.Node) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if secretKey(n.Content[i].Value) {
				if v := n.Content[i+1]; v.Kind == yaml.ScalarNode && v.Value == "" {
					continue // unset shows as unset, not as a hidden value
				}
				*n.Content[i+1] = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: masked}
				continue
			}
			mask(n.Content[i+1])
		}
	case yaml.ScalarNode:
		if u, err := url.Parse(n.Value); err == nil && u.User != nil {
			if _, ok := u.User.Password(); ok {
				// Built by hand: url.URL.String would escape the asterisks.
				user := url.User(u.User.Username()).String()
				u.User = nil
				n.Value = strings.Replace(u.String(), "://", "://"+user+":"+masked+"@", 1)
			}
		}
	default:
		for _, c := range n.Content {
			mask(c)
		}
	}
}
