"""The Gradio cross-modal search demo."""
