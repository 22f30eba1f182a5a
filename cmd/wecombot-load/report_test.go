package main

import (
	"testing"
	"time"
)

func TestSoakGrowth(t *testing.T) {
	var s []reading
	for i := 1; i <= 30; i++ { // 5 minutes every 10 s: 100 MB, then 120 MB from 4 min on
		rss := int64(100_000)
		if i >= 24 {
			rss = 120_000
		}
		s = append(s, reading{At: time.Duration(i) * 10 * time.Second, Value: rss})
	}
	g, first, last, ok := soakGrowth(s)
	if !ok || g != 20_000 || first != 100_000 || last != 120_000 {
		t.Errorf("soakGrowth = %d (%d -> %d), %v; want 20000 (100000 -> 120000)", g, first, last, ok)
	}
	if _, _, _, ok := soakGrowth(s[:1]); ok {
		t.Error("soakGrowth of one sample is ok")
	}
}
