package redirect

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

func linkQuery(fd int, typ ebpf.AttachType) (int, error) {
	q, err := link.QueryPrograms(link.QueryOptions{Target: fd, Attach: typ})
	if err != nil {
		return 0, err
	}
	return len(q.Programs), nil
}
