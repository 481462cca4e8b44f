// A browser test that cannot run where it is started (no stack, the wrong stack mode) skips
// visibly on a developer's machine; under CI=true it fails instead, saying what is missing, so
// that `make test` in CI has no silent pass.
import assert from 'node:assert/strict';

export const CI = process.env.CI === 'true';

/** node:test's `skip` option: the reason outside CI, false under CI=true. */
export const skipOutsideCI = (reason) => (reason && !CI ? reason : false);

/** First line of the test body: under CI=true a test that cannot run fails with the reason. */
export function mustRun(reason) {
  if (reason) assert.fail(`CI=true and this test cannot run here: ${reason}`);
}
