"""Models over HTTP: the server (:mod:`.server`), the client targets (:mod:`.client`) and the
wire format both speak (:mod:`.wire`)."""
