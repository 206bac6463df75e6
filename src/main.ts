/**
 * `npm start`: validates the configuration, opens the store, starts the Remote UI and the background
 * services, and stops them cleanly on SIGINT/SIGTERM. Invalid configuration stops start-up with one line.
 */
import { createPostern } from './app.js';
import { writePidFile } from './backup/running-gateway.js';
import { loadConfig, type Config } from './config.js';
import { isPosternError } from './errors.js';
import { createLogger } from './log.js';
import { describeStartFailure } from './start-failure.js';

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (error) {
    process.stderr.write(`postern: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(78); // EX_CONFIG
  }
  const log = createLogger(config.logLevel);
  // Last resort only: a promise rejected with nobody to handle it is a defect, logged loudly, but it must not
  // take down the Remote UI and the relay for every device (each request's own errors are handled where they
  // occur). A synchronous uncaught exception still ends the process: its state may be inconsistent.
  process.on('unhandledRejection', (reason) => {
    log.error({ err: reason }, 'unhandled promise rejection (a defect); Postern keeps running');
  });
  if (config.extraCaFile) log.info({ file: config.extraCaFile }, 'trusting the extra CA certificates of NODE_EXTRA_CA_CERTS');

  /** One line on stderr and one log line with the reason and its code; then the process ends. */
  const fail = (error: unknown, exitCode: number): void => {
    const reason = describeStartFailure(error, config);
    process.stderr.write(`postern: cannot start: ${reason}\n`);
    log.fatal({ err: error, reason }, 'start-up failed');
    log.flush(() => process.exit(exitCode));
  };

  let postern;
  try {
    postern = await createPostern(config, log);
  } catch (error) {
    // A data directory or key that cannot be used is a configuration problem (EX_CONFIG); the rest is not.
    fail(error, isPosternError(error) ? 78 : 1);
    return;
  }
  // `postern restore` refuses a data directory while this file names a live gateway (backup/running-gateway.ts).
  const removePidFile = await writePidFile(config.dataDir);
  const printFirstAdministrator = () => {
    if (!postern.generatedAdminPassword) return;
    // Printed once, to the terminal only (not the structured log), so that the first login is possible.
    // With HTTPS on it names the address to log in at, so it waits for the listeners (the bound port).
    const where = postern.remoteUiUrl.startsWith('https:') ? `    Log in at: ${postern.remoteUiUrl}\n` : '';
    process.stdout.write(
      `\n  First administrator created.\n    User name: admin\n    Password:  ${postern.generatedAdminPassword}\n${where}  Change it after logging in (Settings/Registration > Change Password).\n\n`,
    );
  };
  if (!config.https) printFirstAdministrator();
  log.info({ dataDir: config.dataDir, database: postern.store.dialect, keySource: postern.store.keySource }, 'store opened');

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    const force = setTimeout(() => process.exit(1), 15_000);
    force.unref();
    try {
      await postern.stop();
      await removePidFile();
    } finally {
      log.flush(() => process.exit(0));
    }
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));

  try {
    await postern.start();
    if (config.https) printFirstAdministrator();
    // With --expose-gc (the start script passes it): one full collection once everything listens, so the
    // garbage of start-up (configuration, templates, the first queries) is not carried as idle memory.
    (globalThis as { gc?: () => void }).gc?.();
  } catch (error) {
    // The administrator exists from now on: its password must not be lost with a failed start.
    if (config.https) printFirstAdministrator();
    await postern.stop().catch(() => undefined);
    await removePidFile().catch(() => undefined);
    fail(error, 1);
  }
}

// A defect in start-up itself ends the process with one line; the rejection handler above is for later.
main().catch((error: unknown) => {
  process.stderr.write(`postern: cannot start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
