package wxcrypto

import "fmt"

// Envelope is the body of a WeCom callback POST. Only Encrypt is needed to
// go on; ToUserName (the CorpID) and AgentID are there for routing.
type Envelope struct {
	ToUserName string
	Encrypt    string
	AgentID    string
}

// ParseEnvelope reads <xml><ToUserName/><Encrypt/><AgentID/></xml>. A body
// without a non-empty Encrypt is refused with ErrXML: nothing can be done
// with it.
func ParseEnvelope(body []byte) (Envelope, error) {
	e, err := parseEnvelope(body)
	if err != nil {
		return Envelope{}, err
	}
	if e.Encrypt == "" {
		return Envelope{}, fmt.Errorf("%w: Encrypt is missing or empty", ErrXML)
	}
	return e, nil
}

// parseEnvelope is ParseEnvelope without the Encrypt check, so the fuzz test
// can compare every well-formed document with encoding/xml.
func parseEnvelope(body []byte) (Envelope, error) {
	var e Envelope
	r := xmlReader{s: string(body)}
	empty, err := r.open()
	if err != nil {
		return Envelope{}, err
	}
	for !empty {
		name, childEmpty, ok, err := r.child()
		if err != nil {
			return Envelope{}, err
		}
		if !ok {
			break
		}
		var dst *string
		switch name {
		case "ToUserName":
			dst = &e.ToUserName
		case "Encrypt":
			dst = &e.Encrypt
		case "AgentID":
			dst = &e.AgentID
		}
		t, err := r.content(name, childEmpty, dst != nil)
		if err != nil {
			return Envelope{}, err
		}
		if dst != nil {
			*dst = t
		}
	}
	if err := r.close(); err != nil {
		return Envelope{}, err
	}
	return e, nil
}
