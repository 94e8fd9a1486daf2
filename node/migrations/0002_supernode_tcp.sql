-- The TCP port each supernode relays on, as the directory lists it (0: none
-- announced; the daemon then tries its own --relay-tcp port, or 443).
ALTER TABLE supernodes ADD COLUMN tcp_port INTEGER NOT NULL DEFAULT 0;
