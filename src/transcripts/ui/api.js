// The enveloped dialect, called with the signed-in credential in a header (never in a URL).
// Every failure becomes an ApiError whose message is a sentence a person can read: the
// envelope's own `message` when there is one, never the body itself.

const UNREACHABLE = "The service could not be reached. Check the connection and try again.";
const FALLBACK = {
  400: "The service did not accept the request.",
  401: "The key was not accepted.",
  403: "This key may not do that.",
  404: "Not found.",
  409: "The request conflicts with stored data.",
  413: "The request is too large.",
  429: "Too many requests.",
  503: "The service is temporarily unavailable; try again shortly.",
};

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/** The header a credential travels in: an API key, or an access token as a Bearer. */
export function credentialHeaders(credential) {
  return credential.startsWith("sk_")
    ? { "X-API-Key": credential }
    : { Authorization: `Bearer ${credential}` };
}

function sentence(status, body) {
  const message = body && typeof body.message === "string" ? body.message.trim() : "";
  if (message && message.length <= 300 && !/^[[{]/.test(message)) {
    return message;
  }
  if (FALLBACK[status]) {
    return FALLBACK[status];
  }
  return status >= 500
    ? `The service failed to answer (HTTP ${status}); try again shortly.`
    : `The service refused the request (HTTP ${status}).`;
}

/** The ApiError a failed response stands for. */
export async function errorOf(response) {
  let body = null;
  if ((response.headers.get("content-type") || "").includes("json")) {
    try {
      body = await response.json();
    } catch {
      body = null;
    }
  }
  let message = sentence(response.status, body);
  const wait = response.headers.get("retry-after");
  if (response.status === 429 && wait && /^\d+$/.test(wait)) {
    message += ` Try again in ${wait} s.`;
  }
  return new ApiError(message, response.status);
}

export class Api {
  /**
   * @param {string} credential an API key or an access token
   * @param {URL} base the service's root: the page is at <root>/ui/
   */
  constructor(credential, base = new URL("../", document.baseURI)) {
    this.credential = credential;
    this.base = base;
  }

  url(path, params = {}) {
    const url = new URL(path.replace(/^\//, ""), this.base);
    for (const [name, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "" && value !== false) {
        url.searchParams.set(name, String(value));
      }
    }
    return url;
  }

  /** The response to a GET, or an ApiError; `AbortError` passes through. */
  async fetch(path, { params, headers, signal, accept = "application/json", cache } = {}) {
    let response;
    try {
      response = await fetch(this.url(path, params), {
        headers: { Accept: accept, ...credentialHeaders(this.credential), ...headers },
        signal,
        // Revalidated every time (a finalized transcript answers 304 to its ETag): an answer
        // is never reused for another credential without the service saying so.
        cache: cache || "no-cache",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
    } catch (error) {
      if (error.name === "AbortError") {
        throw error;
      }
      throw new ApiError(UNREACHABLE, 0);
    }
    if (!response.ok) {
      throw await errorOf(response);
    }
    return response;
  }

  /** The envelope's `data`. */
  async get(path, options) {
    const response = await this.fetch(path, options);
    try {
      const body = await response.json();
      return body.data;
    } catch (error) {
      if (error.name === "AbortError") {
        throw error;
      }
      throw new ApiError("The service sent an answer the viewer cannot read.", response.status);
    }
  }

  /** A file to save: its bytes and the name the service suggests. */
  async download(path, params, fallbackName) {
    const response = await this.fetch(path, { params, accept: "*/*" });
    const disposition = response.headers.get("content-disposition") || "";
    const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
    let name = fallbackName;
    if (match) {
      try {
        name = decodeURIComponent(match[1]);
      } catch {
        name = match[1];
      }
    }
    return { blob: await response.blob(), name: name.replace(/[\\/]/g, "_") };
  }
}
