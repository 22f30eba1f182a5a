package wecomsim

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Paths of the simulator's read-only inspection endpoints, served by Handler
// under any prefix like the API itself. WeCom has no such paths, so a
// service can ask its api_base whether it is this simulator.
const (
	InfoPath      = "/_simulator/info"
	DeliveredPath = "/_simulator/delivered"
)

// Name is what InfoPath answers in its "simulator" field.
const Name = "wecomsim"

// Info is InfoPath's answer.
type Info struct {
	Simulator string `json:"simulator"` // always Name
	Delivered int    `json:"delivered"` // messages delivered so far
}

// Delivery is one delivered message as DeliveredPath lists it: what the
// recipient saw, never a token or a secret.
type Delivery struct {
	ToUser  string    `json:"to_user"`
	AgentID int64     `json:"agent_id"`
	MsgType string    `json:"msg_type"`
	Content string    `json:"content"`
	MsgID   string    `json:"msg_id"`
	At      time.Time `json:"at"`
}

// inspect serves the inspection endpoints; it reports false for any other
// path.
func (s *Server) inspect(w http.ResponseWriter, r *http.Request) bool {
	info := strings.HasSuffix(r.URL.Path, InfoPath)
	if !info && !strings.HasSuffix(r.URL.Path, DeliveredPath) {
		return false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return true
	}
	if info {
		writeJSON(w, Info{Simulator: Name, Delivered: s.DeliveredCount()})
		return true
	}
	since := 0
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, "since: want a non-negative integer", http.StatusBadRequest)
			return true
		}
		since = n
	}
	sent := s.DeliveredSince(since)
	list := make([]Delivery, len(sent))
	for i, m := range sent {
		list[i] = Delivery{ToUser: m.ToUser, AgentID: m.AgentID, MsgType: m.MsgType, Content: m.Content, MsgID: m.MsgID, At: m.At}
	}
	writeJSON(w, list)
	return true
}
