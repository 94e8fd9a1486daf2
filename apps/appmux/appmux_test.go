package appmux_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"testing/synctest"

	"github.com/parley-p2p/parley/apps/appmux"
	"github.com/parley-p2p/parley/apps/internal/apptest"
	"github.com/parley-p2p/parley/natlab"
)

func TestOpenAccept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lab := apptest.NewLab(t, natlab.Link{Delay: 10e6}, nil)
		ab, ba := lab.Connect()
		ctx := context.Background()
		for _, app := range []appmux.App{appmux.Chat, appmux.File, appmux.Tunnel} {
			c, err := appmux.Open(ctx, ab, app)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte("hi")); err != nil {
				t.Fatal(err)
			}
			st, err := ba.AcceptStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got, err := appmux.Accept(st)
			if err != nil || got != app {
				t.Fatalf("Accept = %v, %v; want %v", got, err, app)
			}
			b := make([]byte, 2)
			if _, err := io.ReadFull(st, b); err != nil || string(b) != "hi" {
				t.Fatalf("after header: %q, %v", b, err)
			}
			c.Close()
			st.Close()
		}
	})
}

func TestAcceptBadHeader(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want error
	}{
		{nil, io.ErrUnexpectedEOF},
		{[]byte{0}, appmux.ErrUnknownApp},
		{[]byte{4}, appmux.ErrUnknownApp},
		{[]byte{255, 1}, appmux.ErrUnknownApp},
	} {
		a, b := net.Pipe()
		go func() {
			a.Write(tc.in)
			a.Close()
		}()
		_, err := appmux.Accept(b)
		if !errors.Is(err, tc.want) {
			t.Errorf("Accept(%x) = %v, want %v", tc.in, err, tc.want)
		}
		b.Close()
	}
}

func TestAppString(t *testing.T) {
	if appmux.Chat.String() != "chat" || appmux.App(9).String() != "app(9)" {
		t.Fatal("App.String")
	}
}
