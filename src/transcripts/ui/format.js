// How the viewer writes times, durations, dates and money.

/** Seconds as a clock: 0:07, 3:04, 1:02:09. */
export function clock(seconds) {
  const whole = Math.max(0, Math.floor(Number(seconds) || 0));
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const s = String(whole % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** A session's length, or a dash while it is unknown (a session in progress). */
export function duration(seconds) {
  return seconds === null || seconds === undefined ? "—" : clock(seconds);
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "—" : dateTime.format(date);
}

/** The cost as the API states it (a decimal string, 6 places), in dollars, never rounded. */
export function cost(decimal) {
  return decimal === null || decimal === undefined ? "—" : `$${decimal}`;
}

/** "Assistant" / "User". */
export function speaker(role) {
  return role === "assistant" ? "Assistant" : "User";
}

/** The start of a local calendar day, as the API wants it (ISO 8601, UTC). */
export function dayStart(value) {
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d).toISOString();
}

/** The last millisecond of a local calendar day. */
export function dayEnd(value) {
  const [y, m, d] = value.split("-").map(Number);
  return new Date(new Date(y, m - 1, d + 1).getTime() - 1).toISOString();
}
