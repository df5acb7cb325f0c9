// The passphrase rule, identical in the CLI (chat_client, Python `zxcvbn`) and here
// (@zxcvbn-ts/core with @zxcvbn-ts/language-common): at least 10 characters and a
// zxcvbn score of at least 3 ("safely unguessable": about 10^8 guesses or more). The
// handle counts as a known word, so a passphrase built on it scores low.
//
// The estimator and its dictionaries (about 2 MB) are loaded only when someone registers:
// the dynamic imports become their own bundle chunks (esbuild --splitting).

export const MIN_PASSPHRASE_CHARS = 10;
export const MIN_PASSPHRASE_SCORE = 3;

/** A passphrase the page refuses to register with; the message says why. */
export class WeakPassphrase extends Error {
  constructor(message) {
    super(message);
    this.name = "WeakPassphrase";
  }
}

let estimator = null;

async function zxcvbn() {
  estimator ??= (async () => {
    const [{ ZxcvbnFactory }, common] = await Promise.all([
      import("@zxcvbn-ts/core"),
      import("@zxcvbn-ts/language-common"),
    ]);
    return new ZxcvbnFactory({
      dictionary: { ...common.dictionary },
      graphs: common.adjacencyGraphs,
    });
  })();
  return estimator;
}

/** The zxcvbn score (0-4) of `passphrase`, with `userInputs` (e.g. the handle) as known words. */
export async function passphraseScore(passphrase, userInputs = []) {
  return (await zxcvbn()).check(passphrase, userInputs).score;
}

/** Throw WeakPassphrase unless `passphrase` meets the rule. */
export async function checkPassphrase(passphrase, userInputs = []) {
  if ([...passphrase].length < MIN_PASSPHRASE_CHARS) {
    throw new WeakPassphrase(`Use a passphrase of at least ${MIN_PASSPHRASE_CHARS} characters.`);
  }
  const score = await passphraseScore(passphrase, userInputs);
  if (score < MIN_PASSPHRASE_SCORE) {
    throw new WeakPassphrase(
      "This passphrase is too easy to guess (common words, names, patterns or your " +
        "handle). Use a few unrelated words, or a longer sentence only you would think of.",
    );
  }
}
