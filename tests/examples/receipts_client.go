// receipts_client.go - sarama's AsyncProducer over one kproxyd connection.
package main

import (
	"bufio"
	"fmt"
	"net"
	"sync"
)

type Message struct {
	Value     string // one message in the listener's format: non-empty, no '\n'
	Partition int32
	Offset    int64  // -1 with acks 0
	Err       string // "failed REASON" or "rejected REASON"
}
type Producer struct { // as with sarama, read both Successes() and Errors()
	input, successes, errors chan *Message
	sent                     sync.Map // kproxyd's message number N -> *Message
}

func (p *Producer) Input() chan<- *Message     { return p.input } // close it to finish
func (p *Producer) Successes() <-chan *Message { return p.successes }
func (p *Producer) Errors() <-chan *Message    { return p.errors }

func NewProducer(conn *net.UnixConn) *Producer { // conn: to a listener with "receipts": "each"
	p := &Producer{make(chan *Message, 1000), make(chan *Message, 1000), make(chan *Message, 1000), sync.Map{}}
	go p.write(conn)
	go p.read(conn)
	return p
}

func (p *Producer) write(conn *net.UnixConn) {
	w, n := bufio.NewWriter(conn), uint64(0)
	for m := range p.input {
		n++ // kproxyd numbers the messages of a connection from 1
		p.sent.Store(n, m)
		if w.WriteString(m.Value + "\n"); len(p.input) == 0 {
			w.Flush() // one write for all that came meanwhile
		}
	}
	conn.CloseWrite() // kproxyd sends the last receipts, then EOF
}

func (p *Producer) read(conn *net.UnixConn) { // ok N PARTITION OFFSET | failed N WHY | rejected N WHY
	for s, kind, n, why := bufio.NewScanner(conn), "", uint64(0), ""; s.Scan(); {
		fmt.Sscan(s.Text(), &kind, &n, &why)
		if v, ok := p.sent.LoadAndDelete(n); ok && kind == "ok" {
			fmt.Sscan(s.Text(), &kind, &n, &v.(*Message).Partition, &v.(*Message).Offset)
			p.successes <- v.(*Message)
		} else if ok {
			v.(*Message).Err = kind + " " + why
			p.errors <- v.(*Message)
		}
	}
	close(p.successes)
	close(p.errors)
}
