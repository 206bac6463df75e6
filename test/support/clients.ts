/**
 * Small helpers shared by tests that drive real clients: run a program (python3, curl, swaks) with input,
 * and obtain a real access token from the Microsoft stand-in by the device flow.
 */
import { spawn } from 'node:child_process';
import { Agent, fetch } from 'undici';
import type { MicrosoftStandin } from './oauth-standins.js';
import { approveDeviceCode } from './user-agent.js';

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program, feeding `input` on stdin, and collects its output. */
export function run(command: string, args: string[], input?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

/** RFC 8628 device flow at the Microsoft stand-in, approved by the scripted user; returns the access token. */
export async function microsoftAccessToken(standin: MicrosoftStandin, email: string, scope: string, password = 'correct horse'): Promise<string> {
  const dispatcher = new Agent({ connect: { ca: standin.ca } });
  try {
    const form = (body: Record<string, string>) => ({
      method: 'POST',
      dispatcher,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(body).toString(),
    });
    const authorization = (await (
      await fetch(`${standin.endpoint()}/devicecode`, form({ client_id: standin.publicClientId, scope: `${scope} offline_access` }))
    ).json()) as { device_code: string; user_code: string; verification_uri: string };
    await approveDeviceCode({ verificationUri: authorization.verification_uri, userCode: authorization.user_code, email, password, ca: standin.ca });
    const response = await fetch(
      `${standin.endpoint()}/token`,
      form({ client_id: standin.publicClientId, grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: authorization.device_code }),
    );
    const tokenResponse = (await response.json()) as { access_token?: string };
    if (!tokenResponse.access_token) throw new Error(`no access token: ${JSON.stringify(tokenResponse)}`);
    return tokenResponse.access_token;
  } finally {
    await dispatcher.close();
  }
}
