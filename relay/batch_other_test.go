//go:build !linux

package relay

func gsoMax(w batchWriter) (int32, bool) { return 0, false }
