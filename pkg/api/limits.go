package api

// MaxManifestBytes is the largest manifest (as JSON) the control API
// accepts in one request: the server's receive limit is set from it, and
// nixmox-cli refuses a larger one itself, saying so, before sending it.
const MaxManifestBytes = 64 << 20

// MaxAgentMessageBytes is the largest message the server accepts from an
// agent (reports and hellos are small; a health check's output is cut).
const MaxAgentMessageBytes = 4 << 20
