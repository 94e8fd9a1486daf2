package cli

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/localapi"
	"github.com/parley-p2p/parley/node"
)

func newChatCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "chat CONTACT",
		Short: "Chat with a contact in the terminal",
		Long: `Open an interactive chat with a contact: the history, what you type, the
contact's typing indicator and the delivery state of each message you
send: … waiting, ✓ sent (on its way, or in the server's mailbox), ✓✓
delivered to their device, ✓✓ read. Enter sends; Esc or Ctrl-C leaves.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			peer := args[0]
			hist, err := c.History(ctx, peer, "", 200)
			if err != nil {
				return daemonErr(err, dir)
			}
			m := newChatModel(peer, hist, chatActions{
				send: func(text string) tea.Cmd {
					return func() tea.Msg {
						m, err := c.SendMessage(ctx, peer, text)
						if err != nil {
							return chatErr{daemonErr(err, dir)}
						}
						return chatEvent{localapi.ChatEvent{Kind: "state", Peer: peer, Message: &m}}
					}
				},
				typing:   func() { go c.Typing(ctx, peer) },
				markRead: func() { go c.MarkRead(ctx, peer) },
				path: func() tea.Msg {
					st, err := c.Status(ctx)
					if err != nil {
						return chatPath{"daemon unreachable"}
					}
					return chatPath{pathText(st, peer)}
				},
			})
			p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(cmd.InOrStdin()), tea.WithOutput(cmd.OutOrStdout()))
			go c.ChatEvents(ctx, peer, func(ev localapi.ChatEvent) bool {
				p.Send(chatEvent{ev})
				return true
			})
			_, err = p.Run()
			if err == tea.ErrProgramKilled && ctx.Err() != nil {
				return nil
			}
			return err
		},
	}
	addDataFlag(cmd, &data)
	return cmd
}

// pathText says how the daemon reaches peer, for the chat's title.
func pathText(st node.Status, peer string) string {
	for _, c := range st.Contacts {
		if c.Username != peer {
			continue
		}
		switch c.Path {
		case "direct":
			return fmt.Sprintf("direct, rtt %v", c.RTT.Round(time.Millisecond))
		case "relayed":
			return fmt.Sprintf("relayed via %s, rtt %v", c.Relay, c.RTT.Round(time.Millisecond))
		}
		if c.Online {
			return "online, no session yet"
		}
		return "offline: messages wait in the server's mailbox, sealed"
	}
	return "not a contact"
}

// chatActions are the chat screen's effects, so that tests can drive the
// model without a daemon.
type chatActions struct {
	send     func(text string) tea.Cmd
	typing   func()
	markRead func()
	path     tea.Cmd
}

type (
	chatEvent struct{ ev localapi.ChatEvent }
	chatErr   struct{ err error }
	chatPath  struct{ text string }
	chatTick  time.Time
)

// chatModel is the chat screen: a bubbletea model.
type chatModel struct {
	peer       string
	act        chatActions
	msgs       []localapi.Message
	input      []rune
	path       string
	typingTill time.Time
	err        error
	width      int
	height     int
}

func newChatModel(peer string, hist []localapi.Message, act chatActions) *chatModel {
	return &chatModel{peer: peer, act: act, msgs: hist, path: "…", width: 80, height: 24}
}

func tick() tea.Cmd {
	return tea.Tick(time.Second, func(t time.Time) tea.Msg { return chatTick(t) })
}

func (m *chatModel) Init() tea.Cmd {
	m.act.markRead()
	return tea.Batch(m.act.path, tick())
}

func (m *chatModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tea.KeyMsg:
		switch msg.Type {
		case tea.KeyCtrlC, tea.KeyEsc:
			return m, tea.Quit
		case tea.KeyEnter:
			text := strings.TrimSpace(string(m.input))
			m.input = m.input[:0]
			if text == "" {
				return m, nil
			}
			return m, m.act.send(text)
		case tea.KeyBackspace:
			if len(m.input) > 0 {
				m.input = m.input[:len(m.input)-1]
			}
		case tea.KeySpace:
			m.input = append(m.input, ' ')
			m.act.typing()
		case tea.KeyRunes:
			m.input = append(m.input, msg.Runes...)
			m.act.typing()
		}
	case chatEvent:
		m.apply(msg.ev)
	case chatErr:
		m.err = msg.err
	case chatPath:
		m.path = msg.text
	case chatTick:
		return m, tea.Batch(m.act.path, tick())
	}
	return m, nil
}

// apply folds an event into the screen: a message is shown once, however
// often it is reported; a state only moves forward.
func (m *chatModel) apply(ev localapi.ChatEvent) {
	if ev.Peer != m.peer {
		return
	}
	if ev.Kind == "typing" {
		m.typingTill = time.Now().Add(4 * time.Second)
		return
	}
	if ev.Message == nil {
		return
	}
	nm := *ev.Message
	for i := range m.msgs {
		if m.msgs[i].ID == nm.ID && m.msgs[i].Outgoing == nm.Outgoing {
			if stateRank(nm.State) > stateRank(m.msgs[i].State) {
				m.msgs[i].State = nm.State
			}
			return
		}
	}
	m.msgs = append(m.msgs, nm)
	if !nm.Outgoing {
		m.typingTill = time.Time{}
		m.act.markRead()
	}
}

func stateRank(s string) int {
	switch s {
	case "sent":
		return 1
	case "delivered":
		return 2
	case "read":
		return 3
	}
	return 0
}

func (m *chatModel) View() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chat with %s — %s\n", m.peer, m.path)
	b.WriteString(strings.Repeat("─", max(10, min(m.width, 100))) + "\n")
	rows := max(3, m.height-5)
	start := max(0, len(m.msgs)-rows)
	for _, msg := range m.msgs[start:] {
		when := msg.Time.Local().Format("15:04")
		if msg.Outgoing {
			fmt.Fprintf(&b, "%s  me: %s  %s\n", when, msg.Body, stateMark(msg.State))
		} else {
			fmt.Fprintf(&b, "%s  %s: %s\n", when, msg.Peer, msg.Body)
		}
	}
	for i := len(m.msgs) - start; i < rows; i++ {
		b.WriteString("\n")
	}
	switch {
	case m.err != nil:
		fmt.Fprintf(&b, "error: %v\n", m.err)
	case time.Now().Before(m.typingTill):
		fmt.Fprintf(&b, "%s is typing…\n", m.peer)
	default:
		b.WriteString("\n")
	}
	in := string(m.input)
	if w := m.width - 4; w > 0 && utf8.RuneCountInString(in) > w {
		r := []rune(in)
		in = string(r[len(r)-w:])
	}
	fmt.Fprintf(&b, "> %s█", in)
	return b.String()
}
