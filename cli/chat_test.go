package cli

import (
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/parley-p2p/parley/localapi"
)

// TestChatModel drives the chat screen's model: typing sends indicators,
// Enter sends, a message reported twice is shown once, states only move
// forward, and the peer's typing shows.
func TestChatModel(t *testing.T) {
	var sent []string
	typing, reads := 0, 0
	m := newChatModel("bob", []localapi.Message{{ID: "01", Peer: "bob", Body: "hi alice"}}, chatActions{
		send:     func(text string) tea.Cmd { sent = append(sent, text); return nil },
		typing:   func() { typing++ },
		markRead: func() { reads++ },
		path:     func() tea.Msg { return chatPath{"direct, rtt 12ms"} },
	})
	m.Init()
	m.Update(chatPath{"direct, rtt 12ms"})
	m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("hello")})
	m.Update(tea.KeyMsg{Type: tea.KeySpace})
	m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("bob!")})
	m.Update(tea.KeyMsg{Type: tea.KeyBackspace})
	m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	if len(sent) != 1 || sent[0] != "hello bob" || typing != 3 {
		t.Fatalf("sent %q, %d typing indicators", sent, typing)
	}
	out := localapi.Message{ID: "02", Peer: "bob", Outgoing: true, Body: "hello bob", State: "pending"}
	for _, st := range []string{"pending", "delivered", "sent", "delivered"} {
		out.State = st
		o := out
		m.Update(chatEvent{localapi.ChatEvent{Kind: "state", Peer: "bob", Message: &o}})
	}
	m.Update(chatEvent{localapi.ChatEvent{Kind: "typing", Peer: "bob"}})
	v := m.View()
	if strings.Count(v, "hello bob") != 1 || !strings.Contains(v, "me: hello bob  ✓✓") || strings.Contains(v, "✓✓ read") {
		t.Errorf("view:\n%s", v)
	}
	for _, want := range []string{"chat with bob — direct, rtt 12ms", "bob: hi alice", "bob is typing…"} {
		if !strings.Contains(v, want) {
			t.Errorf("view lacks %q:\n%s", want, v)
		}
	}
	in := localapi.Message{ID: "03", Peer: "bob", Body: "see you"}
	m.Update(chatEvent{localapi.ChatEvent{Kind: "message", Peer: "bob", Message: &in}})
	if reads != 2 || strings.Contains(m.View(), "is typing") {
		t.Errorf("after bob's message: %d read marks; view:\n%s", reads, m.View())
	}
	if _, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEsc}); cmd == nil {
		t.Error("Esc does not quit")
	}
}
