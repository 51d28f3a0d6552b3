// A session in progress, followed live.
//
// EventSource cannot send the credential header, so the stream is read with fetch and parsed
// here, as the HTML standard's event-stream interpretation describes (fields, comments, CR/LF
// line ends, `id` kept for the reconnection's `Last-Event-ID`, `retry` honoured). When the
// service has no stream (404), or while it cannot be reached, the transcript is read again
// every POLL_MS instead; turns are merged by `turn_index`, so a turn seen both ways counts once.

export const POLL_MS = 2000;

/**
 * The events of an event stream, as they arrive.
 * @param {ReadableStream<Uint8Array>} body
 * @param {{lastEventId: string, retry: number}} state updated in place by `id:` and `retry:`
 */
export async function* events(body, state) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let type = "";
  let data = [];
  const line = (text) => {
    if (text === "") {
      const event = data.length ? { event: type || "message", data: data.join("\n") } : null;
      type = "";
      data = [];
      return event;
    }
    if (text.startsWith(":")) {
      return null; // a comment: the heartbeat
    }
    const colon = text.indexOf(":");
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) {
      value = value.slice(1);
    }
    if (field === "event") {
      type = value;
    } else if (field === "data") {
      data.push(value);
    } else if (field === "id" && !value.includes("\0")) {
      state.lastEventId = value;
    } else if (field === "retry" && /^\d+$/.test(value)) {
      state.retry = Number(value);
    }
    return null;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        return; // an event not ended by a blank line is dropped, as the standard says
      }
      buffer += value;
      for (;;) {
        const end = buffer.search(/\r\n|\r|\n/);
        // A CR at the very end may be the first half of a CRLF still on its way.
        if (end === -1 || (end === buffer.length - 1 && buffer[end] === "\r")) {
          break;
        }
        const width = buffer.startsWith("\r\n", end) ? 2 : 1;
        const event = line(buffer.slice(0, end));
        buffer = buffer.slice(end + width);
        if (event) {
          yield event;
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

/**
 * Follow a session until it is finalized or `signal` aborts.
 * @param {object} options
 * @param {import("./api.js").Api} options.api
 * @param {string} options.sessionId
 * @param {boolean} options.stream whether the service offers the stream
 * @param {object} options.params query parameters of every read (e.g. redaction)
 * @param {AbortSignal} options.signal
 * @param {(turns: object[]) => void} options.onTurns
 * @param {(finalized: object) => void} options.onFinalized
 * @param {(mode: "live"|"polling"|"reconnecting") => void} options.onStatus
 * @param {(error: Error) => void} options.onError a failure that ends following
 */
export async function follow(options) {
  const { api, sessionId, params, signal, onTurns, onFinalized, onStatus, onError } = options;
  const transcript = `api/agents/agent-session/${encodeURIComponent(sessionId)}/transcript/`;
  const state = { lastEventId: "", retry: POLL_MS };
  let streaming = options.stream;
  while (!signal.aborted) {
    if (streaming) {
      try {
        const response = await api.fetch(`${transcript}stream/`, {
          params,
          headers: state.lastEventId ? { "Last-Event-ID": state.lastEventId } : {},
          accept: "text/event-stream",
          cache: "no-store",
          signal,
        });
        onStatus("live");
        for await (const event of events(response.body, state)) {
          if (event.event === "turn") {
            onTurns([JSON.parse(event.data)]);
          } else if (event.event === "finalized") {
            onFinalized(JSON.parse(event.data));
            return;
          }
        }
        // Ended early (the server shutting down, a proxy's timeout): resume after `retry`.
      } catch (error) {
        if (signal.aborted) {
          return;
        }
        if (error.status === 404 || error.status === 405) {
          streaming = false; // no stream on this service: read the transcript instead
        } else if (error.status === 401 || error.status === 403) {
          onError(error);
          return;
        }
        // Otherwise the connection failed: catch up below, then connect again.
      }
    }
    onStatus(streaming ? "reconnecting" : "polling");
    try {
      const session = await api.get(transcript, { params, signal, cache: "no-store" });
      onTurns(session.transcript || []);
      if (session.finalized_at) {
        onFinalized({
          session_id: session.session_id,
          finalized_at: session.finalized_at,
          turn_count: session.turn_count,
        });
        return;
      }
    } catch (error) {
      if (signal.aborted) {
        return;
      }
      if (error.status === 401 || error.status === 403 || error.status === 404) {
        onError(error);
        return;
      }
    }
    await sleep(streaming ? state.retry : POLL_MS, signal);
  }
}
