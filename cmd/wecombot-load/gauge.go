package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// reading is a gauge's value at a moment of the run: the service's RSS
// (kB) in a soak, or the fake model's calls in flight.
type reading struct {
	At    time.Duration // since the first callback
	Value int64
}

// inFlightEvery is how often the fake model's calls in flight are read:
// often enough that a backoff of a second or two shows.
const inFlightEvery = 500 * time.Millisecond

// sampleEvery reads a gauge every interval until the returned function is
// called, which returns the readings; failed reads are left out.
func sampleEvery(every time.Duration, read func() (int64, error)) func() []reading {
	quit, done := make(chan struct{}), make(chan []reading)
	go func() {
		var out []reading
		start := time.Now()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-quit:
				done <- out
				return
			case <-t.C:
				if v, err := read(); err == nil {
					out = append(out, reading{At: time.Since(start), Value: v})
				}
			}
		}
	}()
	return func() []reading {
		close(quit)
		return <-done
	}
}

// procStatus reads a "kB" field such as VmRSS or VmHWM of process pid (0:
// this process).
func procStatus(pid int, field string) (int64, error) {
	file := "/proc/self/status"
	if pid != 0 {
		file = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("load: %s not in %s", field, file)
}
