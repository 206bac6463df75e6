/**
 * `npm start`: validates the configuration, opens the store, starts the Remote UI and the background
 * services, and stops them cleanly on SIGINT/SIGTERM. Invalid configuration stops start-up with one line.
 */
import { createPostern } from './app.js';
import { loadConfig, type Config } from './config.js';
import { isPosternError } from './errors.js';
import { createLogger, describeError } from './log.js';

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (error) {
    process.stderr.write(`postern: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(78); // EX_CONFIG
  }
  const log = createLogger(config.logLevel);
  if (config.extraCaFile) log.info({ file: config.extraCaFile }, 'trusting the extra CA certificates of NODE_EXTRA_CA_CERTS');

  let postern;
  try {
    postern = await createPostern(config, log);
  } catch (error) {
    if (isPosternError(error)) {
      process.stderr.write(`postern: ${error.message}\n`);
      process.exit(78);
    }
    throw error;
  }
  if (postern.generatedAdminPassword) {
    // Printed once, to the terminal only (not the structured log), so that the first login is possible.
    process.stdout.write(
      `\n  First administrator created.\n    User name: admin\n    Password:  ${postern.generatedAdminPassword}\n  Change it after logging in (Settings/Registration > Change Password).\n\n`,
    );
  }
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
    } finally {
      log.flush(() => process.exit(0));
    }
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));

  try {
    await postern.start();
  } catch (error) {
    const code = (error as { code?: string }).code;
    log.fatal({ err: describeError(error) }, code === 'EADDRINUSE' ? 'a port is already in use; set POSTERN_HTTP_PORT / POSTERN_SMTP_PORT' : 'start-up failed');
    await postern.stop().catch(() => undefined);
    log.flush(() => process.exit(1));
  }
}

void main();
