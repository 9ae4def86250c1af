/**
 * The agent package's host-side programs: probe.py, and programs/tail.py and programs/list_runs.py
 * (resources/agent/kvscope_agent/programs). Each is sent as the program text of `<python> - ARGS`
 * over one exec channel, read from this machine's copy of the agent, so it runs before the agent
 * is deployed and whatever is deployed; resources/agent/tests holds them to their behaviour.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export type AgentProgram = 'probe.py' | 'programs/tail.py' | 'programs/list_runs.py';

/** The program's text, from the folder that holds kvscope_agent/ on this machine. */
export function readAgentProgram(agentSourceDir: string, program: AgentProgram): Promise<Buffer> {
  return readFile(join(agentSourceDir, 'kvscope_agent', ...program.split('/')));
}
