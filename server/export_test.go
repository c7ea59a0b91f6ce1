package server

// AgentTLS is agentTLS, for the tests of the agent listener.
var AgentTLS = agentTLS
