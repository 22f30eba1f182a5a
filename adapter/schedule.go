package adapter

// Scheduling: which users are served now. Each user with work is queued once
// (active), served by one goroutine at a time, in the order users became
// ready, up to MaxConcurrency at once; a user woken while being served is
// looked at again before the goroutine leaves (again). A served user's
// storage work takes one of storageSlots slots.

// storageSlots is how many users' answers do their storage work at once,
// while up to MaxConcurrency wait on the model. With every waiting user
// let through, their statements took turns at SQLite's one connection one
// by one: all the answers of a burst finished together, seconds later
// (5 answers/s while 4,000 callbacks arrived), and they crowded the ingest.
// Targets: answers keep pace during a burst or a flood; ack p99 < 50 ms.
const storageSlots = 16

// enqueue wakes a worker for user k.
func (p *Pipeline) enqueue(k userKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return // stored; another instance or the next start resumes it
	}
	if p.active[k] {
		p.again[k] = true
		return
	}
	p.active[k] = true
	p.ready = append(p.ready, k)
	p.dispatchLocked()
}

func (p *Pipeline) dispatchLocked() {
	for !p.closed && p.running < p.cfg.LLM.MaxConcurrency && len(p.ready) > 0 {
		k := p.ready[0]
		p.ready = p.ready[1:]
		p.running++
		p.wg.Add(1)
		go p.serve(k)
	}
}

// serve answers the pending messages of user k, looking again if k was
// woken meanwhile.
func (p *Pipeline) serve(k userKey) {
	defer p.wg.Done()
	for {
		p.storing <- struct{}{}
		p.serveUser(k)
		<-p.storing
		p.mu.Lock()
		if p.again[k] && !p.closed {
			delete(p.again, k)
			p.mu.Unlock()
			continue
		}
		delete(p.again, k)
		delete(p.active, k)
		p.running--
		p.dispatchLocked()
		p.mu.Unlock()
		return
	}
}
