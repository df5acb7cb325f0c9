// The page's one error for a check that failed on received data (crypto.js re-exports it).

/** A MAC, signature, commitment or canonical-encoding check did not pass (local to the
 *  receiver, never sent). */
export class CryptoError extends Error {
  constructor(message) {
    super(message);
    this.name = "CryptoError";
  }
}
