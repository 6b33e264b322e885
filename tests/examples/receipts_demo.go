// receipts_demo.go - uses receipts_client.go: each line of stdin is a
// message; prints each one's fate. go run receipts_*.go SOCKET < lines
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
)

func main() {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: os.Args[1], Net: "unix"})
	if err != nil {
		panic(err)
	}
	p := NewProducer(conn)
	go func() {
		for in := bufio.NewScanner(os.Stdin); in.Scan(); {
			if in.Text() != "" { // kproxyd skips empty lines: no number
				p.Input() <- &Message{Value: in.Text()}
			}
		}
		close(p.Input())
	}()
	done := make(chan bool)
	go func() {
		for m := range p.Errors() {
			fmt.Println("error", m.Err, m.Value)
		}
		done <- true
	}()
	for m := range p.Successes() {
		fmt.Println("ok", m.Partition, m.Offset, m.Value)
	}
	<-done
}
