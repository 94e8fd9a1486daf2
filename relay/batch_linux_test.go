//go:build linux

package relay

// gsoMax returns the largest GSO segment w sends, if it can send GSO.
func gsoMax(w batchWriter) (int32, bool) {
	mw, ok := w.(*mmsgWriter)
	if !ok {
		return 0, false
	}
	return mw.gsoMax.Load(), true
}
