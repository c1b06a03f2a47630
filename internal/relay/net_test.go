package relay

import "net"

type netListener = net.Listener

var listen = net.Listen
