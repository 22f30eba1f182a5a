package adapter

// Scheduling: which users are served now. Each user with work is queued once
// (active), served by one goroutine at a time, in the order users became
// ready, up to the MaxConcurrency of the user's bot's model endpoint at once
// (each endpoint has its own queue, so that a slow or rate-limited model
// does not hold up the bots of another); a user woken while being served is
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
	ep := p.model(k.bot).ep
	ep.ready = append(ep.ready, k)
	p.dispatchLocked(ep)
}

// dispatchLocked starts serving the ready users of ep, up to its
// MaxConcurrency.
func (p *Pipeline) dispatchLocked(ep *endpoint) {
	for !p.closed && ep.running < ep.MaxConcurrency && len(ep.ready) > 0 {
		k := ep.ready[0]
		ep.ready = ep.ready[1:]
		ep.running++
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
		ep := p.model(k.bot).ep
		ep.running--
		p.dispatchLocked(ep)
		p.mu.Unlock()
		return
	}
}
