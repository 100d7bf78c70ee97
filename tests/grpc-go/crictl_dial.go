// A CRI client that dials the way crictl 1.26 and kubelets of its generation do: grpc-go
// before 1.34, the socket path itself as the target (so also as the HTTP/2 :authority), a
// custom unix dialer and no TLS. It calls RPCs by method name with raw protobuf bytes, so it
// needs no generated code, and prints what it learnt as one JSON object. Any failed call makes
// it exit 1 with the gRPC error on stderr.
//
// Usage: crictl_dial SOCKET_PATH
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
)

// rawCodec sends and receives protobuf messages as the bytes they are.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// field is one top-level protobuf field: its number and, for length-delimited ones, its bytes.
type field struct {
	number int
	bytes  []byte
}

func varint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("bad varint")
}

// fields splits a message into its top-level fields.
func fields(msg []byte) ([]field, error) {
	var out []field
	for len(msg) > 0 {
		key, n, err := varint(msg)
		if err != nil {
			return nil, err
		}
		msg = msg[n:]
		f := field{number: int(key >> 3)}
		switch key & 7 {
		case 0:
			_, n, err = varint(msg)
		case 1:
			n = 8
		case 5:
			n = 4
		case 2:
			var l uint64
			l, n, err = varint(msg)
			if err == nil && uint64(len(msg)-n) < l {
				err = errors.New("truncated field")
			}
			if err == nil {
				f.bytes = msg[n : n+int(l)]
				n += int(l)
			}
		default:
			err = fmt.Errorf("wire type %d", key&7)
		}
		if err != nil {
			return nil, err
		}
		if n > len(msg) {
			return nil, errors.New("truncated message")
		}
		msg = msg[n:]
		out = append(out, f)
	}
	return out, nil
}

func stringField(msg []byte, number int) string {
	fs, _ := fields(msg)
	for _, f := range fs {
		if f.number == number {
			return string(f.bytes)
		}
	}
	return ""
}

// repeatedIDs returns field `id` of each message in repeated field `list`.
func repeatedIDs(msg []byte, list, id int) []string {
	ids := []string{}
	fs, _ := fields(msg)
	for _, f := range fs {
		if f.number == list {
			ids = append(ids, stringField(f.bytes, id))
		}
	}
	return ids
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: crictl_dial SOCKET_PATH")
		os.Exit(2)
	}
	socket := os.Args[1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", addr)
	}
	conn, err := grpc.DialContext(ctx, socket, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithContextDialer(dialer))
	if err != nil {
		fmt.Fprintf(os.Stderr, "dial %s: %v\n", socket, err)
		os.Exit(1)
	}
	defer conn.Close()

	call := func(method string) []byte {
		request, reply := []byte{}, []byte{}
		if err := conn.Invoke(ctx, method, &request, &reply, grpc.ForceCodec(rawCodec{})); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", method, err)
			os.Exit(1)
		}
		return reply
	}
	version := call("/runtime.v1.RuntimeService/Version")
	status := call("/runtime.v1.RuntimeService/Status")
	sandboxes := call("/runtime.v1.RuntimeService/ListPodSandbox")
	containers := call("/runtime.v1.RuntimeService/ListContainers")
	images := call("/runtime.v1.ImageService/ListImages")
	call("/runtime.v1.ImageService/ImageFsInfo")

	conditions := []string{}
	if fs, err := fields(status); err == nil {
		for _, f := range fs {
			if f.number == 1 { // RuntimeStatus
				conditions = repeatedIDs(f.bytes, 1, 1) // RuntimeCondition.type
			}
		}
	}
	out := map[string]interface{}{
		"grpc_go":             grpc.Version,
		"runtime_name":        stringField(version, 2),
		"runtime_api_version": stringField(version, 4),
		"conditions":          conditions,
		"sandboxes":           repeatedIDs(sandboxes, 1, 1),  // PodSandbox.id
		"containers":          repeatedIDs(containers, 1, 1), // Container.id
		"images":              repeatedIDs(images, 1, 1),     // Image.id
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
