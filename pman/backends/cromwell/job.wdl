version 1.0

# One pman job: the job's command in its image, once per worker.
# Written by pman (pman/backends/cromwell.py); every value is a workflow input.

workflow pman {
  input {
    String image
    Array[String] argv
    String script
    Int workers = 1
    Int cpu = 1
    String memory
    Int gpu_count = 0
    Int runtime_minutes
    String incoming
    String outgoing
  }

  scatter (worker in range(workers)) {
    call plugin {
      input:
        image = image,
        script = script,
        worker = worker,
        workers = workers,
        cpu = cpu,
        memory = memory,
        gpu_count = gpu_count,
        runtime_minutes = runtime_minutes,
        incoming = incoming,
        outgoing = outgoing
    }
  }
}

task plugin {
  input {
    String image
    String script
    Int worker
    Int workers
    Int cpu
    String memory
    Int gpu_count
    Int runtime_minutes
    String incoming
    String outgoing
  }

  command <<<
export PMAN_WORKER_INDEX=~{worker} PMAN_NUMBER_OF_WORKERS=~{workers}
~{script}
  >>>

  runtime {
    docker: image
    cpu: cpu
    memory: memory
    gpu: gpu_count > 0
    gpuCount: gpu_count
    runtime_minutes: runtime_minutes
    pman_incoming: incoming
    pman_outgoing: outgoing
    maxRetries: 0
  }
}
